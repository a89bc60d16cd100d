"""The advertiser portal (/advertiser/): an advertiser's users see their campaigns, the outcome
of every conversion they sent, their keys and integration snippets, and send test conversions.
Every read takes the signed-in user's advertiser (`selectors`)."""
