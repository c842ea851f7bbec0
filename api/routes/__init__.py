"""The API's routes, a router per area; `api.app.create_app` includes them in order."""
