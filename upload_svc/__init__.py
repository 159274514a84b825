"""upload_svc: upload tickets (presigned PUT), probing, thumbnails, video metadata, events."""
