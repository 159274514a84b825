"""feed_svc: see ARCHITECTURE.md. Its methods answer UNIMPLEMENTED until their issue lands."""
