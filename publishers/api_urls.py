"""Routes of the publisher API, included under `/api/v1/` by config/urls.py.

`/api/v1/conversions` serves two audiences through one dispatcher
(`publishers.api.conversions.conversions_endpoint`): the publishers' GET and the advertisers'
POST (tracking/api.py).
"""

from django.urls import path, re_path

from publishers.api import callbacks, conversions, offers, payouts, postbacks, reports

urlpatterns = [
    re_path(r"^conversions/?$", conversions.conversions_endpoint, name="api-conversions"),
    path("clicks/<str:click_id>", conversions.ClickDetailView.as_view(), name="api-click"),
    path("trace", conversions.TraceView.as_view(), name="api-trace"),
    path("postbacks", postbacks.PostbackListView.as_view(), name="api-postbacks"),
    # Before postbacks/<event_id>, which would otherwise take "replay" for an id.
    path("postbacks/replay", postbacks.PostbackReplayView.as_view(), name="api-postbacks-replay"),
    path("postbacks/<str:event_id>", postbacks.PostbackDetailView.as_view(), name="api-postback"),
    path(
        "postbacks/<str:event_id>/retry",
        postbacks.PostbackRetryView.as_view(),
        name="api-postback-retry",
    ),
    path("callbacks", callbacks.CallbackListView.as_view(), name="api-callbacks"),
    path(
        "callbacks/<str:callback_id>", callbacks.CallbackDetailView.as_view(), name="api-callback"
    ),
    path(
        "callbacks/<str:callback_id>/test",
        callbacks.CallbackTestView.as_view(),
        name="api-callback-test",
    ),
    path(
        "callbacks/<str:callback_id>/resume",
        callbacks.CallbackResumeView.as_view(),
        name="api-callback-resume",
    ),
    path("offers", offers.OfferListView.as_view(), name="api-offers"),
    path(
        "offers/<str:offer_id>/access-request",
        offers.OfferAccessRequestView.as_view(),
        name="api-offer-access-request",
    ),
    path(
        "offers/<str:offer_id>/links",
        offers.OfferLinkCreateView.as_view(),
        name="api-offer-links",
    ),
    path("payouts", payouts.PayoutTermsView.as_view(), name="api-payouts"),
    path("stats", reports.StatsView.as_view(), name="api-stats"),
    path("reconciliation", reports.ReconciliationView.as_view(), name="api-reconciliation"),
]
