"""The Teams side of the bot: the Microsoft 365 Agents SDK behind `/api/messages` in `kb serve`."""
