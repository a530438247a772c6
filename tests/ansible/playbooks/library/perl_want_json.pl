#!/usr/bin/perl
# WANT_JSON
# A want_json module in Perl.
printf("{\"changed\": false, \"msg\": \"perl %vd\"}\n", $^V);
