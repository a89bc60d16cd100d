"""The statuses a conversion can have. Its own home, below both apps' models: a conversion
stores one (`Conversion.Status`) and a callback template filters on them
(`CallbackTemplate.statuses`), and the publisher core must not import tracking's models."""

from django.db import models


class ConversionStatus(models.TextChoices):
    APPROVED = "approved"
    PENDING = "pending"
    REJECTED = "rejected"
    # An approved conversion the advertiser took back (chargeback, refund): unlike
    # "rejected" it was paid out, so publishers usually claw the payout back.
    REVERSED = "reversed"
