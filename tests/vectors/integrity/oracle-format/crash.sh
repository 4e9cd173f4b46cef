# Guest side of crash.py: write through the journal, then lose power with the devices open.
# "full": the pattern over the whole device (the journal wraps many times), close, reopen,
#         zeros over the last 8 KiB;
# "small": the pattern over the first 256 sectors, close, reopen, the pattern over the last
#         16 sectors.
# The last write is too small to wake the kernel's journal writer: after the fsync it is
# committed but only in the journal when the power goes.
i=0
while read dev name style opts; do
  i=$((i+1))
  integritysetup open $opts $dev c$i || { echo "OPEN FAIL $name"; continue; }
  n=$(blockdev --getsz /dev/mapper/c$i)
  if [ "$style" = full ]; then
    dd if=/in/pat.bin of=/dev/mapper/c$i bs=4096 count=$((n / 8)) oflag=direct conv=notrunc,fsync 2>/dev/null
  else
    dd if=/in/pat.bin of=/dev/mapper/c$i bs=4096 count=32 oflag=direct conv=notrunc,fsync 2>/dev/null
  fi
  integritysetup close c$i
  integritysetup open $opts $dev c$i
  if [ "$style" = full ]; then
    dd if=/dev/zero of=/dev/mapper/c$i bs=4096 seek=$((n / 8 - 2)) count=2 oflag=direct conv=notrunc,fsync 2>/dev/null
  else
    dd if=/in/pat.bin of=/dev/mapper/c$i bs=4096 skip=$((n / 8 - 2)) seek=$((n / 8 - 2)) count=2 oflag=direct conv=notrunc,fsync 2>/dev/null
  fi
  echo "$name ($style) written: $n sectors"
done < /in/cases.txt
echo "powering off with the devices open"
poweroff -n -f
