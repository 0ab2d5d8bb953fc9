"""The engine: writing studies (creation, confirmation, campaign stages) from the contract, through the store."""
