"""Logger shared by every module (Powertools structured JSON logs, one per process)."""

from aws_lambda_powertools import Logger

logger = Logger(service="callvault")
