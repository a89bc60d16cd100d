from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("tracking.urls")),
    path("", include("postbacks.urls")),
    path("", include("publishers.urls")),
]
