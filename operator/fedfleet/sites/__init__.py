"""Sites in their own clusters: the hub's site gateway, enrolment, and the site agent."""
