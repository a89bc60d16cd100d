from django.apps import AppConfig


class PostbacksConfig(AppConfig):
    name = "postbacks"

    def ready(self) -> None:
        # Registers the delivery-settings system check.
        from postbacks import checks  # noqa: F401
