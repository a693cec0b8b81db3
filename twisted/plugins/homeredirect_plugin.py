from twisted.application.service import ServiceMaker

homeredirect = ServiceMaker(
    "homeredirect",
    "homeredirect.tap",
    "SIP director: redirect or proxy REGISTER to the user's home server",
    "homeredirect",
)
