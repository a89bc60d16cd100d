from django.urls import path

from postbacks import views

urlpatterns = [
    path("demo/receiver/", views.demo_inbox, name="demo-inbox"),
    path("demo/receiver/<path:rest>", views.demo_receive, name="demo-receive"),
]
