"""The KCC's screen: a server-rendered web application, a second entry point over the same use cases as the CLI.

Route handlers read the request, call one use case and render its outcome; the rules (who may do what, what a
decision writes) live in kcc.usecases. Modules: `app` (assembly), `auth` (sign-in: OIDC or the development
sign-in), `security` (headers, the mail frame's policy), `forms` (WTForms with CSRF), `sanitize` (mail HTML),
`pages` (templates and the error table), `server` (uvicorn) and one module per screen in `views`.
"""
