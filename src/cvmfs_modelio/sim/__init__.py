"""The emulated CVMFS stack: publish (store writer), serve (HTTP), mount (FUSE client control)."""
