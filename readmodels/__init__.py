"""Read models several services share: the counter mirror (``counters``), the feed's shared
rules and constants (``feed``: queue sizes, the ranking, the per-creator rule) and every read of
another service's schema (``replica``: the feed queries over activity.* and upload.*, read-only).

``mesh/`` is the runtime every service runs on; this package is domain data that crosses
service lines. A service imports it, never another service's package."""
