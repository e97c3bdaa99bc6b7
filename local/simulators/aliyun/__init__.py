"""What the Alibaba Cloud simulators (CCC, Dyplsapi) share: the RPC gateway that verifies
signature v1.0 (``gateway``) and the signing itself (``signature``).

Run both standalone: ``python -m local.simulators.aliyun --ccc-port 8091 --dypls-port 8092``.
"""
