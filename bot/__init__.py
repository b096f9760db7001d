"""Chat front ends: the platform-neutral conversation core, Slack, Teams and the local web chat."""
