"""A site in a box: N emulated worker nodes loading one model at once through one squid."""
