from django.urls import path

from tracking import api, views

urlpatterns = [
    path("click", views.click, name="click"),
    path("smart", views.smart_ad, name="smart-ad"),
    path("postback", api.ConversionGetPostbackView.as_view(), name="postback-intake"),
]
