from django.contrib.auth import views as auth_views
from django.urls import path

from publishers import views

urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/reports/", views.reports, name="reports"),
    path("dashboard/conversions/", views.conversions, name="conversions"),
    path("dashboard/trace/", views.trace, name="trace"),
    path("dashboard/callbacks/", views.callbacks, name="callbacks"),
    path("dashboard/callbacks/new/", views.callback_new, name="callback_new"),
    path("dashboard/callbacks/preview/", views.callback_preview, name="callback_preview"),
    path("dashboard/callbacks/test/", views.callback_test, name="callback_test"),
    path("dashboard/callbacks/<str:public_id>/", views.callback_edit, name="callback_edit"),
    path(
        "dashboard/callbacks/<str:public_id>/delete/",
        views.callback_delete,
        name="callback_delete",
    ),
    path(
        "dashboard/callbacks/<str:public_id>/toggle/",
        views.callback_toggle,
        name="callback_toggle",
    ),
    path(
        "dashboard/callbacks/<str:public_id>/resume/",
        views.callback_resume,
        name="callback_resume",
    ),
    path(
        "dashboard/callbacks/<str:public_id>/secret/reveal/",
        views.callback_secret_reveal,
        name="callback_secret_reveal",
    ),
    path(
        "dashboard/callbacks/<str:public_id>/secret/rotate/",
        views.callback_secret_rotate,
        name="callback_secret_rotate",
    ),
    path("dashboard/deliveries/", views.deliveries, name="deliveries"),
    path("dashboard/deliveries/retry/", views.deliveries_retry, name="deliveries_retry"),
    path("dashboard/links/", views.links, name="links"),
    path("dashboard/offers/", views.offers, name="offers"),
    path("dashboard/offers/<str:public_id>/request/", views.offer_request, name="offer_request"),
    path(
        "dashboard/offers/<str:public_id>/links/",
        views.offer_link_create,
        name="offer_link_create",
    ),
    path("dashboard/api-keys/", views.api_keys, name="api_keys"),
    path("dashboard/api-keys/new/", views.api_key_create, name="api_key_create"),
    path("dashboard/api-keys/<str:lookup>/revoke/", views.api_key_revoke, name="api_key_revoke"),
    path("dashboard/settings/", views.settings_page, name="settings"),
    path("dashboard/settings/secret/reveal/", views.secret_reveal, name="secret_reveal"),
    path("dashboard/settings/secret/rotate/", views.secret_rotate, name="secret_rotate"),
    path("dashboard/settings/team/invite/", views.member_invite, name="member_invite"),
    path(
        "dashboard/settings/team/invitations/revoke/",
        views.member_invitation_revoke,
        name="member_invitation_revoke",
    ),
    path("dashboard/settings/team/remove/", views.member_remove, name="member_remove"),
    path("dashboard/settings/team/role/", views.member_role, name="member_role"),
    path("dashboard/activity/", views.activity, name="activity"),
    path("dashboard/switch/", views.publisher_switch, name="publisher_switch"),
    path("dashboard/staff/", views.staff_publishers, name="staff_publishers"),
    path("dashboard/staff/view/", views.staff_view_start, name="staff_view_start"),
    path("dashboard/staff/leave/", views.staff_view_stop, name="staff_view_stop"),
    # An invitation's link (publishers/views/invitations.py): accept or decline.
    path("invitations/<str:token>/", views.invitation, name="invitation"),
    # Publisher sign-up (publishers/views/signup.py): the form, "check your inbox", the link.
    path("signup/", views.signup_form, name="signup"),
    path("signup/sent/", views.signup_sent, name="signup_sent"),
    path("signup/verify/<str:token>/", views.signup_verify, name="signup_verify"),
    # Accounts: sign in (throttled by django-axes), sign out, password reset by email.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password-reset/",
        auth_views.PasswordResetView.as_view(),
        name="password_reset",
    ),
    path(
        "accounts/password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        views.PasswordResetConfirm.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "accounts/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
]
