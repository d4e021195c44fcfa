"""Admission, run before a request is validated: tokens and scopes, per-token rate, bytes in flight,
overload and the admitted-rate limit, and the route table they are checked against."""
