from django.urls import path, re_path

from tracking import api, views

urlpatterns = [
    path("click", views.click, name="click"),
    path("smart", views.smart_ad, name="smart-ad"),
    # One path, two audiences: advertisers POST conversions, publishers GET theirs.
    re_path(r"^api/v1/conversions/?$", api.conversions_endpoint, name="api-conversions"),
    path("postback", api.ConversionGetPostbackView.as_view(), name="postback-intake"),
]
