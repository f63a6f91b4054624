"""Lambda-style handlers the Lambda tests run on real workers, as a Lambda would run them."""
