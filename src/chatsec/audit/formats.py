"""The formats `chatsec audit` renders (a leaf module: the CLI lists them without loading
the checks or the driver)."""

FORMATS = ("text", "json", "junit", "sarif", "html")
