from django.apps import AppConfig


class PostbacksConfig(AppConfig):
    name = "postbacks"

    def ready(self) -> None:
        # Late by Django's rule: system checks are registered once the app registry is ready.
        import postbacks.checks  # noqa: F401  (registers check_metrics_token)
