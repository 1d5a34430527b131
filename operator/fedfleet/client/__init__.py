"""The data plane's other end: a site's client process that trains and uploads updates."""
