"""Proactive knowledge push: behaviour events, interest profiles, matching, digests, delivery."""
