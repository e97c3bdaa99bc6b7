"""callvault core: archive telephony call recordings into S3, exactly once, intact.

Handlers in ``functions/`` stay thin; everything with domain meaning lives here:
sources and their credentials, provider clients, the fetch job model, the S3 stream
writer, the DynamoDB ledger and the retry policy.
"""
