"""HTTP hardening: security headers, CORS, WebSocket origins, error bodies, API fuzzing."""
