"""Tests of the finetune command-line tool."""
