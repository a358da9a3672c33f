"""Built-in backbones; they implement :class:`ssl_bench.core.backbone.SegNet`."""
