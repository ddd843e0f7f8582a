"""Sends one person's identify, track, group and page through analytics-python to HOST, then flushes.

Usage: python send.py HOST WRITE_KEY USER_ID
"""
import sys

import segment.analytics as analytics

host, write_key, user_id = sys.argv[1:4]
errors = []
analytics.write_key = write_key
analytics.host = host
analytics.max_retries = 0
analytics.on_error = lambda error, batch: errors.append(error)
analytics.identify(user_id, {"email": f"{user_id}@example.com", "plan": "pro"})
analytics.track(user_id, "Report Exported", {"rows": 3})
analytics.group(user_id, f"org-{user_id}", {"name": f"Org of {user_id}"})
analytics.page(user_id, name="Pricing", properties={"path": "/pricing"})
analytics.flush()
analytics.shutdown()
if errors:
    sys.exit(f"analytics-python failed: {errors}")
