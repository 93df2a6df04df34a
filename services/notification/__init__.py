"""Notification service: tells users by email (and in-app) that their conversion finished."""
