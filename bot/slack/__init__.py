"""The Slack side of the bot: a slack-bolt AsyncApp mounted in `kb serve`, or Socket Mode."""
