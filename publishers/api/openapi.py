"""What the publisher API's OpenAPI description (drf-spectacular) needs beyond its views'
decorators: the publisher key's security scheme and the shared `format` parameter.

The error shape is described in config/api.py (`errors`), the advertisers' intake in
tracking/api.py, and `/api/v1/conversions`, which serves both audiences, in
publishers/api/conversions.py (`add_shared_path_endpoints`).
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

from publishers.authentication import PublisherKeyAuthentication


class PublisherKeyScheme(OpenApiAuthenticationExtension):
    target_class = PublisherKeyAuthentication
    name = "publisherKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "rt_pub_<lookup>_<secret>",
            "description": "A publisher API key, created in the dashboard.",
        }


FORMAT_PARAMETER = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    enum=["json", "csv"],
    description="`csv` for a CSV file (or send `Accept: text/csv`); default JSON.",
)
