# dmkit crypt vectors: plain dm-crypt images written by the real kernel, one per cipher / IV
# mode / option combination. Runs in the dmkit kernel oracle guest (busybox sh), started by
# build.py beside this file:
#   $KERNEL_RUN --in pat.bin --in cases.txt --out OUT oracle-script.sh IMAGE...
# /in/pat.bin: 512-byte sector s = sha256(b"dmkit-fixture:%d" % s).digest() * 16.
# /in/cases.txt: one case a line (build.py writes it; the committed cases-*.txt are copies):
#   NAME DEV SECTORS DIF CIPHER KEY IV_OFFSET OFFSET [#OPT OPT...]
# DIF is "-" (crypt straight on DEV) or TAG:BLOCK (crypt over a dm-integrity target without
# an internal hash, "0 SECTORS integrity DEV 0 TAG J ...", which the kernel formats on first
# load; the crypt table then needs integrity:TAG:...). Per case: dmsetup create, record the
# table (--showkeys), write the pattern over the whole mapped device with dd conv=fsync,
# remove, create again, sha256 of what the kernel reads back, remove; the kernel's messages
# for the case go to /out/NAME.dmesg.
mkdir -p /out
uname -r > /out/uname-r.txt
cat /proc/version > /out/proc-version.txt
dmsetup version > /out/dmsetup-version.txt 2>&1
dmsetup targets > /out/dmsetup-targets.txt 2>&1
dmesg -c > /out/boot.dmesg

# st NAME WHAT CMD...: run CMD, log "rc=N WHAT" to /out/NAME.status
st() {
  n=$1; what=$2; shift 2
  "$@"
  rc=$?
  echo "rc=$rc $what" >> /out/$n.status
  return $rc
}

up() {  # up NAME: create the (integrity and) crypt mappings of the current case
  if [ "$dif" != - ]; then
    st $1 "create-dif" dmsetup create ${1}_dif --table "$diftable" || return 1
  fi
  st $1 "create" dmsetup create $1 --table "$table" 2>> /out/$1.create-err || {
    [ "$dif" != - ] && dmsetup remove ${1}_dif
    return 1
  }
}

down() {
  st $1 "remove" dmsetup remove $1
  if [ "$dif" != - ]; then st $1 "remove-dif" dmsetup remove ${1}_dif; fi
}

exec 3< /in/cases.txt
while read name dev sectors dif cipher key ivoff off rest <&3; do
  [ -z "$name" ] && continue
  case "$name" in \#*) continue ;; esac
  : > /out/$name.status
  lower=$dev
  diftable=""
  if [ "$dif" != - ]; then
    tag=${dif%%:*}; bs=${dif##*:}
    if [ "$bs" = 512 ]; then
      diftable="0 $sectors integrity $dev 0 $tag J 0"
    else
      diftable="0 $sectors integrity $dev 0 $tag J 1 block_size:$bs"
    fi
    lower=/dev/mapper/${name}_dif
    echo "$diftable" > /out/$name.dif-table-given
  fi
  table="0 $sectors crypt $cipher $key $ivoff $lower $off"
  [ -n "$rest" ] && table="$table $rest"
  echo "$table" > /out/$name.table-given
  if ! up $name; then
    echo "REFUSED $name"
    dmesg -c > /out/$name.dmesg
    continue
  fi
  dmsetup table --showkeys $name > /out/$name.table
  [ "$dif" != - ] && dmsetup table ${name}_dif > /out/$name.dif-table
  blockdev --getsz /dev/mapper/$name > /out/$name.size
  blockdev --getss /dev/mapper/$name > /out/$name.lbs
  st $name "write" dd if=/in/pat.bin of=/dev/mapper/$name bs=4096 count=$((sectors / 8)) conv=fsync 2>/dev/null
  down $name
  up $name || { echo "REOPEN FAILED $name"; dmesg -c > /out/$name.dmesg; continue; }
  sha256sum /dev/mapper/$name | cut -d' ' -f1 > /out/$name.sha256
  [ "$dif" != - ] && dmsetup status ${name}_dif > /out/$name.dif-status
  down $name
  dmesg -c > /out/$name.dmesg
  echo "DONE $name $(cat /out/$name.sha256)"
done </dev/null
exec 3<&-
dmsetup ls > /out/dmsetup-ls-at-end.txt 2>&1
