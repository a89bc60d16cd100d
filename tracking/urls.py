from django.urls import path, re_path

from tracking import api, views

urlpatterns = [
    path("click", views.click, name="click"),
    re_path(r"^api/v1/conversions/?$", api.ConversionCreateView.as_view(), name="api-conversions"),
    path("postback", api.ConversionGetPostbackView.as_view(), name="postback-intake"),
]
