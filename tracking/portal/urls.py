from django.urls import path

from tracking.portal import views

urlpatterns = [
    path("", views.home, name="advertiser_home"),
    path("conversions/", views.conversions, name="advertiser_conversions"),
    path("test-conversion/", views.test_conversion, name="advertiser_test_conversion"),
    path("keys/", views.keys, name="advertiser_keys"),
    path("keys/new/", views.key_create, name="advertiser_key_create"),
    path("keys/<str:lookup>/revoke/", views.key_revoke, name="advertiser_key_revoke"),
    path("integration/", views.integration, name="advertiser_integration"),
]
