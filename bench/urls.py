"""The product's URLs plus the bare-Django baseline at /bench/bare."""

from django.urls import include, path

from bench.baselines import bare_view

urlpatterns = [
    path("bench/bare", bare_view),
    path("", include("config.urls")),
]
