"""Providers: ``interface`` (what a provider is), one module per provider, and ``registry``."""
