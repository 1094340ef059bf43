# Summarises `nghttp -v` output as one line of what the client received, for buf_curl_test.sh:
# "status=<code>" per response head, "END_STREAM" per received frame that ends the stream, and
# "RST_STREAM(<error code>)" per received reset. Frame lines can follow response body bytes on
# the same line (nghttp prints the body inline), hence match() rather than fields.
match($0, /\] (recv|send) [A-Z_]+ frame/) {
  split(substr($0, RSTART + 2, RLENGTH - 2), w, " ")
  dir = w[1]
  frame = w[2]
  if (dir == "recv" && frame == "RST_STREAM") pending = 1
  next
}
/\] recv \(stream_id=[0-9]+\) :status:/ { printf "status=%s ", $NF; next }
dir == "recv" && (frame == "DATA" || frame == "HEADERS") && /; END_STREAM/ { printf "END_STREAM " }
pending && match($0, /error_code=[A-Z_]+/) {
  printf "RST_STREAM(%s) ", substr($0, RSTART + 11, RLENGTH - 11)
  pending = 0
}
