"""Translation backends and the routing between them."""
