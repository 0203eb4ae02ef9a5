"""Pipeline: actors, fan-out, delivery, finishing, exports and side jobs, over runtime/ and channels/."""
