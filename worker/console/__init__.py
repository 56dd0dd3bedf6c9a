"""The finance console (issue 17): a separate web app on its own address, behind a sign-in.

app.py (the Flask application factory), users.py and throttle.py (people, sessions, failed
sign-ins), secret.py (the session key), proxy.py (the client's address behind a trusted proxy),
charts.py (the SVG chart), gunicorn_conf.py (its server), and a blueprint per group of pages
with its templates beside it: auth/, overview/, days/, orders/. Every figure comes from
worker/reports/views.py, which the command line's --json reads too.
"""
