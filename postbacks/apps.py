from django.apps import AppConfig


class PostbacksConfig(AppConfig):
    name = "postbacks"

    def ready(self) -> None:
        # Inside ready(), as Django asks of an app's system checks (check_metrics_token): the
        # app registry is loaded by then.
        import postbacks.checks  # noqa: F401
