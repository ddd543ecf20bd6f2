"""Registry API (placeholder until the registry lands)."""


def lambda_handler(event: dict, context: object) -> dict:
    return {"statusCode": 501, "body": "{}"}
