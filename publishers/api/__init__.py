"""The publisher API (DRF): `/api/v1/…` with `Authorization: Bearer rt_pub_…`.

Every view inherits `base.PublisherScopedView`, which authenticates the key, applies the
per-key rate limit and scopes every query to the key's publisher. Routes: `publishers/api_urls.py`;
contract: `docs/openapi.yaml` (generated, see docs/api.md).
"""
