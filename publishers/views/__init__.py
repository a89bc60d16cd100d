"""The publisher dashboard: one module per page, all scoped through `common.member_view`."""

from publishers.views.account import (
    PasswordResetConfirm,
    member_invitation_revoke,
    member_invite,
    member_remove,
    member_role,
    secret_reveal,
    secret_rotate,
    settings_page,
)
from publishers.views.activity import activity
from publishers.views.callbacks import (
    callback_delete,
    callback_edit,
    callback_new,
    callback_preview,
    callback_resume,
    callback_secret_reveal,
    callback_secret_rotate,
    callback_test,
    callback_toggle,
    callbacks,
)
from publishers.views.conversions import conversions, trace
from publishers.views.deliveries import deliveries, deliveries_retry
from publishers.views.invitations import invitation
from publishers.views.keys import api_key_create, api_key_revoke, api_keys
from publishers.views.links import links
from publishers.views.offers import offer_link_create, offer_request, offers
from publishers.views.overview import dashboard, home
from publishers.views.reports import reports
from publishers.views.signup import signup_form, signup_sent, signup_verify
from publishers.views.teams import (
    publisher_switch,
    staff_publishers,
    staff_view_start,
    staff_view_stop,
)

__all__ = [
    "PasswordResetConfirm",
    "activity",
    "api_key_create",
    "api_key_revoke",
    "api_keys",
    "callback_delete",
    "callback_edit",
    "callback_new",
    "callback_preview",
    "callback_resume",
    "callback_secret_reveal",
    "callback_secret_rotate",
    "callback_test",
    "callback_toggle",
    "callbacks",
    "conversions",
    "dashboard",
    "deliveries",
    "deliveries_retry",
    "home",
    "invitation",
    "links",
    "member_invitation_revoke",
    "member_invite",
    "member_remove",
    "member_role",
    "offer_link_create",
    "offer_request",
    "offers",
    "publisher_switch",
    "reports",
    "secret_reveal",
    "secret_rotate",
    "settings_page",
    "signup_form",
    "signup_sent",
    "signup_verify",
    "staff_publishers",
    "staff_view_start",
    "staff_view_stop",
    "trace",
]
