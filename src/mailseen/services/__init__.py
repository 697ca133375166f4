"""Services: what mailseen does, built on storage and the core, called by every adapter."""
