"""activity_svc: users and sign-in, follows, likes, favorites, comments, counters, events."""
