"""Pure contracts every runtime imports: the Pulumi program, the SCP, the Lambdas, the CLI and the
local stack. No pulumi, no boto3 (tests/test_layout.py checks it)."""
