"""The outbox: one Postback per conversion × template × status (and per correction of its
amounts), and one row per attempt."""

from django.db import models
from django.db.models import Q
from django.utils import timezone

from publishers.ids import new_event_id


class Postback(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for next_attempt_at (or claimed: leased_until > now)
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # exhausted or stopped; kept for replay, never deleted early

    event_id = models.CharField(max_length=40, unique=True, default=new_event_id, editable=False)
    conversion = models.ForeignKey(
        "tracking.Conversion", on_delete=models.CASCADE, related_name="postbacks"
    )
    template = models.ForeignKey(
        "publishers.CallbackTemplate",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="postbacks",
    )
    publisher = models.ForeignKey(
        "publishers.Publisher", on_delete=models.CASCADE, related_name="postbacks"
    )
    # The conversion status this postback announces (a status change fires a new postback).
    conversion_status = models.CharField(max_length=16)
    # 0, or the number of the advertiser's correction of the conversion's amounts that fired
    # this status's postback again with the corrected payout (a new event id).
    revision = models.PositiveSmallIntegerField(default=0)
    # Expanded once when the conversion was recorded, then frozen: retries send the same URL.
    url = models.TextField()
    # A JSON webhook's body (placeholders.webhook_body), built and frozen with the URL: every
    # retry and re-send POSTs these exact bytes. Empty for a GET postback (most rows: no cost).
    body = models.TextField(blank=True, default="")
    # The URL's "name:port" (http.destination_host), the unit the claim is fair across: a host
    # at its in-flight cap, or held by its breaker, has none of its rows claimed.
    host = models.CharField(max_length=300, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # Set while a worker holds the row; an expired lease means the worker died.
    leased_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversion", "template", "conversion_status", "revision"],
                name="postbacks_postback_unique_per_status",
            ),
        ]
        indexes = [
            # Sweeper and claim: pending rows by due time (a small partial index; delivered
            # rows, the vast majority, are not in it).
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="postbacks_postback_due_idx",
            ),
            # The fair claim and /metrics: pending rows per host, oldest due first.
            models.Index(
                fields=["host", "next_attempt_at"],
                condition=Q(status="pending"),
                name="postbacks_pb_host_due_idx",
            ),
            # Delivery log: one publisher's postbacks by time.
            models.Index(fields=["publisher", "created_at"], name="postbacks_postback_pub_idx"),
        ]

    def __str__(self) -> str:
        return self.event_id

    @property
    def method(self) -> str:
        """How it is sent: a JSON webhook is a POST with its body, anything else a GET."""
        return "POST" if self.body else "GET"


class PostbackAttempt(models.Model):
    class Outcome(models.TextChoices):
        SUCCESS = "success"
        RETRY = "retry"  # failed, another attempt is scheduled
        FAILED = "failed"  # failed, no further attempt

    postback = models.ForeignKey(Postback, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    url = models.TextField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    error_kind = models.CharField(max_length=32, blank=True)
    error = models.CharField(max_length=500, blank=True)
    resolved_ip = models.GenericIPAddressField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)

    class Meta:
        ordering = ["postback_id", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["postback", "number"], name="postbacks_attempt_unique_number"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.postback_id}#{self.number} {self.outcome}"


class DemoCallback(models.Model):
    """A request received by the built-in demo receiver (local mode only): a stand-in for a
    publisher's server, so `make run` shows a whole round trip with nothing else running."""

    received_at = models.DateTimeField(default=timezone.now)
    method = models.CharField(max_length=4, default="GET")
    path = models.CharField(max_length=2048)
    query_string = models.TextField(blank=True)
    body = models.TextField(blank=True)  # a JSON webhook's, as received
    event_id = models.CharField(max_length=40, blank=True)
    signature_valid = models.BooleanField(default=False)
    headers = models.JSONField(default=dict)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.received_at:%H:%M:%S} {self.path}"
