# dmkit crypt vectors: small LUKS images made by the real kernel + cryptsetup.
# Run by build.py (beside this file), which prepares the inputs and calls:
#   kernel-run --timeout 3000 --in pat.bin --in keys --out OUT make-images.sh \
#       luks1-aes-xts.img luks2-aes-xts-argon2id.img luks2-aes-xts-hmac-sha256-nowipe.img \
#       luks2-aes-gcm-random-aead-nowipe.img luks2-chacha20-poly1305-nowipe.img
# each image a 4 MiB zero file (truncate -s 4M). pat.bin: 512-byte sector s =
# sha256(b"dmkit-fixture:%d" % s).digest() * 16, for s in 0..8191.
# keys/NAME.pass: the passphrase (no trailing newline).
mkdir -p /out
uname -r > /out/uname-r.txt
cat /proc/version > /out/proc-version.txt
cryptsetup --version > /out/cryptsetup-version.txt
integritysetup --version > /out/integritysetup-version.txt
dmsetup version > /out/dmsetup-version.txt
dmsetup targets > /out/dmsetup-targets.txt 2>&1

# Writes and reads use 4 KiB dd blocks on 4 KiB-aligned ranges: whole pages, so the page
# cache never has to read (and authenticate) an unwritten neighbour sector first.
# run NAME CMD...: log the command to /out/NAME.cmds, then run it; log its status
run() {
  n=$1; shift
  echo "$*" >> /out/$n.cmds
  sh -c "$*"
  rc=$?
  echo "rc=$rc $*" >> /out/$n.status
  return $rc
}

# mk NAME DEV INTEGRITY(0|1) LUKSFORMAT-OPTIONS...
mk() {
  n=$1; dev=$2; integ=$3; shift 3
  : > /out/$n.cmds; : > /out/$n.status
  key=/in/keys/$n.pass
  run $n "cryptsetup luksFormat --batch-mode $* --key-file $key $dev" || { echo "FORMAT FAIL $n"; return; }
  run $n "cryptsetup open --key-file $key $dev $n" || { echo "OPEN FAIL $n"; return; }
  dmsetup table $n > /out/$n.table
  for d in $(dmsetup ls | cut -f1 | grep "^${n}_dif"); do dmsetup table $d >> /out/$n.table; done
  N=$(blockdev --getsz /dev/mapper/$n)
  [ $((N % 8)) = 0 ] || echo "WARNING $n: N=$N is not a multiple of 8 (4 KiB dd would be off)"
  echo $N > /out/$n.size
  blockdev --getss /dev/mapper/$n > /out/$n.lbs
  A1=$(( (N / 2) / 8 * 8 ))
  echo "0 128" > /out/$n.ranges
  echo "$A1 64" >> /out/$n.ranges
  echo "$((N - 64)) 64" >> /out/$n.ranges
  while read s c; do
    run $n "dd if=/in/pat.bin of=/dev/mapper/$n bs=4096 skip=$((s / 8)) seek=$((s / 8)) count=$((c / 8)) conv=notrunc,fsync"
  done < /out/$n.ranges
  run $n "cryptsetup close $n"
  run $n "cryptsetup open --key-file $key $dev $n"
  : > /out/$n.range-sha256
  while read s c; do
    h=$(dd if=/dev/mapper/$n bs=4096 skip=$((s / 8)) count=$((c / 8)) 2>/dev/null | sha256sum | cut -d' ' -f1)
    echo "$s $c $h" >> /out/$n.range-sha256
  done < /out/$n.ranges
  if [ "$integ" = 1 ]; then
    # unwritten sectors (no wipe) must fail authentication in the kernel too
    : > /out/$n.probes
    # (4 KiB pages wholly unwritten: 512-byte busybox dd iflag=direct reads went through the
    # page cache in this guest, so any read covers a whole page)
    for s in 128 $((A1 - 8)) $((A1 + 64)) $((N - 72)); do
      if dd if=/dev/mapper/$n of=/dev/null bs=4096 skip=$((s / 8)) count=1 2>/dev/null; then
        echo "$s ok" >> /out/$n.probes
      else
        echo "$s fail" >> /out/$n.probes
      fi
    done
  else
    sha256sum /dev/mapper/$n | cut -d' ' -f1 > /out/$n.sha256 2>/dev/null
  fi
  run $n "cryptsetup close $n"
  run $n "cryptsetup luksDump --batch-mode --dump-volume-key --key-file $key --volume-key-file /out/$n.vk $dev"
  cryptsetup luksDump $dev > /out/$n.dump.txt
  echo "DONE $n N=$N"
}

mk luks1-aes-xts /dev/vda 0 --type luks1 --cipher aes-xts-plain64 --key-size 512 --hash sha256 --pbkdf pbkdf2 --pbkdf-force-iterations 1000
mk luks2-aes-xts-argon2id /dev/vdb 0 --type luks2 --cipher aes-xts-plain64 --key-size 512 --pbkdf argon2id --pbkdf-memory 32768 --pbkdf-force-iterations 4 --pbkdf-parallel 1 --luks2-metadata-size 16k --luks2-keyslots-size 256k
mk luks2-aes-xts-hmac-sha256-nowipe /dev/vdc 1 --type luks2 --cipher aes-xts-plain64 --integrity hmac-sha256 --integrity-no-wipe --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --luks2-metadata-size 16k --luks2-keyslots-size 512k
mk luks2-aes-gcm-random-aead-nowipe /dev/vdd 1 --type luks2 --cipher aes-gcm-random --integrity aead --integrity-no-wipe --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --luks2-metadata-size 16k --luks2-keyslots-size 256k
mk luks2-chacha20-poly1305-nowipe /dev/vde 1 --type luks2 --cipher chacha20-random --integrity poly1305 --integrity-no-wipe --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --luks2-metadata-size 16k --luks2-keyslots-size 256k
dmesg | grep -iE "integrity|crypt|error" > /out/dmesg.txt
dmsetup ls > /out/dmsetup-ls-at-end.txt 2>&1
