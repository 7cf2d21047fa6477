; COMTERM.COM: a tiny DOS terminal for COM1. It programs the UART (9600
; baud, 8N1, received-data interrupt, DTR, RTS and OUT2), installs an
; IRQ 4 handler, then sends each character of its text, waiting the given
; number of milliseconds before each, and reads each byte back: from its
; IRQ 4 handler when the interrupt arrives, else by polling LSR. With a
; loopback plug on COM1 every byte comes back; a VM that does not own the
; port reads 0FFh (printed as '?').
;
; Command tail: DELAY TEXT, for example "100 HELLO" (100 ms before each
; byte). It prints "COMTERM sent HELLO, got HELLO" and exits with the
; number of bytes that came back unchanged.
;
; Build: nasm -f bin -o COMTERM.COM comterm.asm

        org 100h

COM1    equ 3F8h
RBR     equ COM1                ; receive buffer / transmit holding (DLAB 0)
IER     equ COM1+1
IIR     equ COM1+2
LCR     equ COM1+3
MCR     equ COM1+4
LSR     equ COM1+5

start:
        ; ---- the command tail: a decimal delay, then the text ----
        mov si, 81h
        xor cx, cx
        mov cl, [80h]
        xor bx, bx              ; the delay in ms
.skip1: jcxz .parsed
        cmp byte [si], ' '
        jne .digits
        inc si
        dec cx
        jmp .skip1
.digits:
        jcxz .parsed
        mov al, [si]
        cmp al, '0'
        jb .skip2
        cmp al, '9'
        ja .skip2
        sub al, '0'
        xor ah, ah
        push ax
        mov ax, bx
        mov dx, 10
        mul dx
        pop dx
        add ax, dx
        mov bx, ax
        inc si
        dec cx
        jmp .digits
.skip2: jcxz .parsed
        cmp byte [si], ' '
        jne .parsed
        inc si
        dec cx
        jmp .skip2
.parsed:
        mov [delay], bx
        mov [text], si
        mov [textlen], cx

        ; ---- IRQ 4 (vector 0Ch): our handler ----
        mov ax, 350Ch
        int 21h
        mov [old0c], bx
        mov [old0c+2], es
        mov ax, 250Ch
        mov dx, irq4
        int 21h

        ; ---- the UART: 9600 baud (divisor 12), 8N1, RDA interrupt, OUT2 ----
        mov dx, LCR
        mov al, 83h             ; DLAB on, 8 data bits
        out dx, al
        mov dx, RBR
        mov al, 12              ; divisor latch low
        out dx, al
        mov dx, IER
        xor al, al              ; divisor latch high
        out dx, al
        mov dx, LCR
        mov al, 03h             ; DLAB off, 8N1
        out dx, al
        mov dx, IER
        mov al, 01h             ; interrupt on received data
        out dx, al
        mov dx, MCR
        mov al, 0Bh             ; DTR, RTS, OUT2 (the gate to the PIC)
        out dx, al
        in al, 21h              ; unmask IRQ 4 at the PIC
        and al, 0EFh
        out 21h, al

        ; ---- send each byte and read it back ----
        mov si, [text]
        mov di, got
        mov cx, [textlen]
.next:  jcxz .done
        push cx
        mov ax, [delay]         ; wait DELAY ms: INT 15h AH=86h, CX:DX microseconds
        mov bx, 1000
        mul bx
        mov cx, dx
        mov dx, ax
        mov ah, 86h
        int 15h
        mov byte [rxflag], 0
        mov dx, RBR
        mov al, [si]
        out dx, al              ; transmit
        mov cx, 1000            ; at most this many polls
.wait:  cmp byte [rxflag], 0    ; the IRQ 4 handler got it
        jne .irq
        mov dx, LSR
        in al, dx
        test al, 01h            ; data ready
        jnz .poll
        loop .wait
        mov al, '-'             ; nothing came back
        jmp .store
.irq:   mov al, [rxbyte]
        jmp .check
.poll:  mov dx, RBR
        in al, dx
.check: cmp al, [si]
        jne .mark
        inc byte [echoed]
.mark:  cmp al, 0FFh            ; what a VM without the port reads
        jne .store
        mov al, '?'
.store: mov [di], al
        inc di
        inc si
        pop cx
        dec cx
        jmp .next
.done:  mov byte [di], '$'

        ; ---- report, put everything back, exit ----
        mov ah, 09h
        mov dx, msg1
        int 21h
        mov si, [text]
        mov cx, [textlen]
.echo:  jcxz .echoed
        mov dl, [si]
        mov ah, 02h
        int 21h
        inc si
        dec cx
        jmp .echo
.echoed:
        mov ah, 09h
        mov dx, msg2
        int 21h
        mov ah, 09h
        mov dx, got
        int 21h

        in al, 21h              ; mask IRQ 4 again
        or al, 10h
        out 21h, al
        mov dx, IER
        xor al, al
        out dx, al
        mov dx, MCR
        out dx, al
        push ds
        lds dx, [old0c]
        mov ax, 250Ch
        int 21h
        pop ds
        mov al, [echoed]
        mov ah, 4Ch
        int 21h

; IRQ 4: take the received byte, EOI to the PIC.
irq4:   push ax
        push dx
        mov dx, IIR
        in al, dx
        test al, 01h            ; no interrupt pending: not ours
        jnz .eoi
        mov dx, LSR
        in al, dx
        test al, 01h
        jz .eoi
        mov dx, RBR
        in al, dx
        mov [cs:rxbyte], al
        mov byte [cs:rxflag], 1
.eoi:   mov al, 20h
        out 20h, al
        pop dx
        pop ax
        iret

msg1    db 'COMTERM sent $'
msg2    db ', got $'
delay   dw 0
text    dw 0
textlen dw 0
old0c   dd 0
rxflag  db 0
rxbyte  db 0
echoed  db 0
got     times 130 db 0
